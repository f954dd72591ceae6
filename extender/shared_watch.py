"""One pod watch per extender process, shared by its gunicorn workers.

Why: every worker needs the hot value (pods bound since APOLLO's sample) and reports the pods it
scored, but a pod watch costs CPU per pod event (reading and parsing pod JSON, about 0.25 ms per bound
pod) and an API-server watch per worker. With one watch per worker, that cost multiplied by the worker
count, on the cores kube-scheduler needs during a burst.

How: the workers elect a publisher by binding a Linux abstract Unix socket named after the gunicorn
master (a worker's parent), so only one of them can hold it. The publisher runs the pod watch and sends
each binding and deletion, as one small orjson line, to every other worker; a worker that connects
first receives the publisher's current ledger. Every worker feeds its own `BindingSink` (ledger and
SchedulingResult reports for the pods it scored), so requests still read only local memory. If the
publisher dies (gunicorn replaces it), its socket vanishes with it: the subscribers' streams end, one
of them binds the name and lists and watches from scratch, the others subscribe to it. The publisher
accepts subscribers once its first listing is counted, and ends each replay with a sync line, so every
worker can tell when its ledger is complete (`synced`, shown by the readiness probe).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import orjson

from common.loops import BackgroundLoop
from extender.placements import Placement
from extender.pod_watcher import Binding, BindingSink, PodWatcher

log = logging.getLogger("extender.watch")
RETRY_SECONDS = 1.0  # after the publisher went away, before electing again
SEND_TIMEOUT_SECONDS = 2.0  # a subscriber that does not read for this long is dropped (it reconnects)


def socket_name(master_pid: int) -> str:
    """The abstract socket of one extender process (gunicorn master), so two extenders never share it."""
    return f"\0apollo-extender-pod-watch-{master_pid}"


def encode_bound(binding: Binding) -> bytes:
    p = binding.placement
    return (
        orjson.dumps(
            ["b", binding.uid, binding.namespace, binding.name, p.node, p.cpu_cores, p.memory_bytes, p.bound_at]
        )
        + b"\n"
    )


def encode_deleted(uid: str) -> bytes:
    return orjson.dumps(["d", uid]) + b"\n"


SYNCED_LINE = b'["s"]\n'  # after a replay: the subscriber now holds everything the synced publisher counted


def apply_line(line: bytes, sink: BindingSink) -> None:
    """One publisher line into a worker's sink; a malformed line is skipped (and logged), never fatal."""
    try:
        record = orjson.loads(line)
        if record[0] == "b":
            _, uid, namespace, name, node, cpu, memory, bound_at = record
            sink.bound(Binding(uid, namespace, name, Placement(node, float(cpu), float(memory), float(bound_at))))
        elif record[0] == "d":
            sink.deleted(record[1])
    except (orjson.JSONDecodeError, ValueError, TypeError, IndexError) as exc:
        log.warning(
            "malformed pod-watch line skipped", extra={"error": str(exc), "line": line[:200].decode(errors="replace")}
        )


class _Fanout:
    """The publisher's listener: its own sink first, then one line to every subscriber."""

    def __init__(self, sink: BindingSink) -> None:
        self.sink = sink
        self.lock = threading.Lock()
        self.subscribers: list[socket.socket] = []

    def known(self, uid: str) -> bool:
        return self.sink.known(uid)

    def bound(self, binding: Binding) -> None:
        with self.lock:
            self.sink.bound(binding)
            self._send(encode_bound(binding))

    def deleted(self, uid: str) -> None:
        with self.lock:
            self.sink.deleted(uid)
            self._send(encode_deleted(uid))

    def _send(self, line: bytes) -> None:
        for sub in list(self.subscribers):
            try:
                sub.sendall(line)
            except OSError:
                self._drop(sub)

    def _drop(self, sub: socket.socket) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        sub.close()

    def add(self, sub: socket.socket) -> None:
        """A new subscriber gets the current ledger, then every change, with nothing lost in between."""
        sub.settimeout(SEND_TIMEOUT_SECONDS)
        with self.lock:
            replay = b"".join(
                encode_bound(Binding(uid, "", "", placement)) for uid, placement in self.sink.ledger.entries()
            )
            try:
                sub.sendall(replay + SYNCED_LINE)
            except OSError:
                sub.close()
                return
            self.subscribers.append(sub)

    def close(self) -> None:
        with self.lock:
            for sub in self.subscribers:
                sub.close()
            self.subscribers.clear()


class SharedPodWatch(BackgroundLoop):
    """In every worker: the publisher (runs the watch) or a subscriber (applies the publisher's lines)."""

    def __init__(self, core_v1: Callable[[], Any], sink: BindingSink, name: str | None = None) -> None:
        super().__init__("shared-pod-watch", RETRY_SECONDS)
        self.core_v1 = core_v1  # built only by the publisher: a subscriber needs no API client
        self.sink = sink
        self.name = name or socket_name(os.getppid())
        self.role = "electing"
        self._subscriber_synced = False
        self._listener: socket.socket | None = None
        self._watcher: PodWatcher | None = None
        self._fanout: _Fanout | None = None

    @property
    def synced(self) -> bool:
        """This worker's ledger holds every binding the watch has seen (the publisher listed, or replayed)."""
        if self.role == "publisher":
            return self._watcher is not None and self._watcher.synced.is_set()
        return self.role == "subscriber" and self._subscriber_synced

    def run_once(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.name)
        except OSError as exc:
            listener.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            self._subscribe()
            return
        self._publish(listener)

    def _subscribe(self) -> None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.name)
        except OSError:
            conn.close()
            return  # the publisher is going away: elect again after RETRY_SECONDS
        self.role = "subscriber"
        conn.settimeout(RETRY_SECONDS)
        buffer = b""
        try:
            while not self.stopping:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break  # the publisher went away
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line == SYNCED_LINE[:-1]:
                        self._subscriber_synced = True
                    elif line:
                        apply_line(line, self.sink)
        except OSError as exc:
            log.info("pod-watch stream ended", extra={"error": str(exc)})
        finally:
            conn.close()
            self._subscriber_synced = False
            self.role = "electing"

    def _publish(self, listener: socket.socket) -> None:
        self.role = "publisher"
        log.info("this worker runs the extender's pod watch", extra={"pid": os.getpid()})
        listener.listen(64)
        listener.settimeout(RETRY_SECONDS)
        self._listener = listener
        self._fanout = _Fanout(self.sink)
        self._watcher = PodWatcher(self.core_v1(), self._fanout)
        self._watcher.start()
        try:
            # Subscribers wait in the backlog until the first listing is counted, so a replay is complete.
            while not self.stopping and not self._watcher.synced.wait(RETRY_SECONDS):
                pass
            while not self.stopping:
                try:
                    sub, _ = listener.accept()
                except TimeoutError:
                    continue
                self._fanout.add(sub)
        except OSError as exc:
            if not self.stopping:
                log.warning("pod-watch publisher stopped accepting", extra={"error": str(exc)})
        finally:
            self._watcher.stop()
            self._fanout.close()
            listener.close()

    def stop(self, timeout: float | None = 5.0) -> None:
        super().stop(timeout)
        if self._watcher is not None:
            self._watcher.stop(timeout)
